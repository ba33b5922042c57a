"""What a run leaves behind: protocols, cell records and their schema, the results folder, provenance."""
