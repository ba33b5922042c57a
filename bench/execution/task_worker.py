"""A task process (python -m bench.execution.task_worker, started by TaskProcessPool): messages on standard input
and on the original standard output, everything it prints on standard error; Ctrl-C stops the parent, which then
stops it."""
import os
import signal
import sys

from bench.execution.task_processes import serve

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    messages_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                                          # prints (warnings of imports) go to standard error
    serve(sys.stdin.buffer, messages_out)
