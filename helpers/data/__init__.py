"""Stage 1, data: conversations from dataset files (every supported format, FILE:LINE errors), the shipped general
set, the persona scoring rule, colours and the Colorist dataset. Imports nothing from later stages.
"""
