"""The error a learner can cause and fix (bad data, wrong path, unknown name). CLI prints it without a traceback
and exits 2; notebooks show the message. Anything else is a bug and keeps its traceback."""


class TunebookError(Exception):
    exit_code = 2
