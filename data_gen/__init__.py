"""Command-line data generators (`python -m data_gen.<name> --help`); the logic they call lives in helpers."""
