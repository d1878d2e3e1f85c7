"""Stage 8, share: what leaves this machine -- `upload` of an adapter or merged model (only its model, tokenizer and
record files) with a model card written from tunebook.json and evaluation.json, to the Hugging Face hub or
ModelScope; `export gguf` for llama.cpp with an Ollama Modelfile.
"""
