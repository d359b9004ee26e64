"""The offline demo's tiny models: a Qwen2-architecture causal LM and a BERT sentence embedder, built in seconds."""
