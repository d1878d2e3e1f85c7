"""Command-line data generators (`python -m data_gen.<name> --help`); each module has an importable main()."""
