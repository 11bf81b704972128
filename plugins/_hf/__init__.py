"""Hugging Face plumbing shared by the built-ins: loading models, tokenizers and files, and the policy wrapper.

The hf testbed, the trl trainer and the judges built on transformers models
(embedding, reward_model, pairrm) all use it; none of them imports another's
modules. Private to this package: third-party plugins should not rely on it.
"""
