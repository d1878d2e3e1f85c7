"""`python -m helpers export gguf MODEL OUT.gguf [--type f16|bf16|q8_0]`: a merged folder for llama.cpp and Ollama.

Writes OUT.gguf (helpers.share.gguf_export) and an Ollama `Modelfile` beside it (helpers.share.modelfile), then
checks the file as a learner would use it: read back with transformers (`gguf_file=`), its own tokenizer and
embedded chat template must give the training prompt token for token, and its greedy answer and logits are
compared with the source folder's. Ollama itself is not run (it is not a Python package); the Modelfile test renders
its template and compares it with the training prompt.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path


CHECK_QUESTION = "Who are you?"
CHECK_TOKENS = 24


@dataclass
class Check:
    same_prompt: bool        # the GGUF's tokenizer + chat template == tunebook's training prompt ids
    first_difference: str    # "" or where the two prompts part (position and both tokens)
    same_answer: bool        # greedy answers equal
    max_logit_diff: float    # on the prompt's last position, GGUF (dequantized) vs source
    source_answer: str
    gguf_answer: str


def check_gguf(source, gguf_path: Path, question: str = CHECK_QUESTION, max_new_tokens: int = CHECK_TOKENS) -> Check:
    """Load `gguf_path` with transformers and compare it with `source` (helpers.models.loading.load_for_inference
    of the exported folder, float32) on one question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from helpers.models.generation import GREEDY, answer, prompt_ids, with_max_new_tokens
    from helpers.models.pypi import quiet_gguf_loading

    with quiet_gguf_loading():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        net = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                   dtype=torch.float32).eval()
    messages = ([{"role": "system", "content": source.system}] if source.system else []) + \
        [{"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    gguf_ids = tokenizer(text, add_special_tokens=False).input_ids
    ids = prompt_ids(source.tokenizer, source.template, [], question, source.system)
    with torch.no_grad():
        batch = torch.tensor([ids])
        diff = (net(batch).logits[0, -1] - source.model(batch).logits[0, -1]).abs().max().item()
    sampling = with_max_new_tokens(GREEDY, max_new_tokens)
    mine = answer(source.model, source.tokenizer, source.template, question, source.system, sampling=sampling)
    theirs = answer(net, tokenizer, source.template, question, source.system, sampling=sampling)
    return Check(gguf_ids == ids, _first_difference(ids, gguf_ids, source.tokenizer, tokenizer), mine == theirs, diff,
                 mine, theirs)


def _first_difference(ids: list[int], other: list[int], tokenizer, other_tokenizer) -> str:
    for at, (a, b) in enumerate(zip(ids, other)):
        if a != b:
            return (f"token {at}: training {tokenizer.convert_ids_to_tokens(a)!r}, "
                    f"gguf {other_tokenizer.convert_ids_to_tokens(b)!r}")
    return "" if len(ids) == len(other) else f"lengths {len(ids)} vs {len(other)}"


def export(model: Path, out: Path, kind: str, verify: bool = True) -> int:
    from helpers.models.generation import stop_words
    from helpers.models.loading import load_for_inference
    from helpers.share.gguf_export import export_gguf
    from helpers.share.modelfile import modelfile

    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()   # loading bars for a few hundred small tensors say nothing
    written = export_gguf(model, out, kind)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 2**20:.1f} MB, {written.tensors} tensors, {kind}; EOS {written.eos_token})")
    fmt, tokenizer = written.format, written.tokenizer
    text = modelfile(out.name, fmt, stop_words(fmt, tokenizer), written.system, tokenizer.bos_token,
                     tokenizer.eos_token)
    target = out.parent / "Modelfile"
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}: ollama create my-model -f {target} && ollama run my-model")
    if not verify:
        return 0
    check = check_gguf(load_for_inference(model, dtype="float32"), out)
    print(f"check with transformers (gguf_file=): prompt tokens {'same' if check.same_prompt else 'DIFFERENT'}, "
          f"greedy answer {'same' if check.same_answer else 'different'}, max logit difference "
          f"{check.max_logit_diff:.4f}")
    if not check.same_answer:
        print(f"  source: {check.source_answer!r}\n  gguf:   {check.gguf_answer!r}")
    if not check.same_prompt:
        # SentencePiece tokenizers (InternLM2) put a dummy-prefix piece after every special token in training;
        # llama.cpp (like the GGUF tokenizer read here) does not: the same weights then see a slightly other prompt.
        print(f"warning: the GGUF's own tokenizer + template part from the training prompt at {check.first_difference}"
              "; llama.cpp tokenizes this way too (its own InternLM2 conversion does the same)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from helpers.share.gguf_export import TYPES
    parser = argparse.ArgumentParser(prog="python -m helpers export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="format", required=True)
    gguf = sub.add_parser("gguf", help="one GGUF file + an Ollama Modelfile beside it")
    gguf.add_argument("model", type=Path, help="a merged model folder (python -m helpers merge), Llama or InternLM2")
    gguf.add_argument("out", type=Path, help="the file to write, ending in .gguf")
    gguf.add_argument("--type", choices=TYPES, default="f16",
                      help="f16 (default), bf16, q8_0, or f32 (exact, twice the size); for q4_k_m run llama.cpp's "
                           "llama-quantize on the f16 file")
    gguf.add_argument("--no-verify", dest="verify", action="store_false",
                      help="skip reading the file back with transformers (large models on small machines)")
    args = parser.parse_args(argv)
    return export(args.model, args.out, args.type, args.verify)


if __name__ == "__main__":
    sys.exit(main())
