"""Stage 3, models: find, fetch (PyPI, hub, InternStudio share) and load models; the offline tiny model; what
produced an adapter (record); answers with the training template (generation); InternLM2 <-> Llama (internlm2/).
"""
