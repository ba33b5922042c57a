"""What a reader studies: the regularizer protocol, conv4, the inner loop (Eq. 3), the meta-objective (Eq. 4),
meta-training and meta-testing (Algorithms 1-2)."""
