"""`rlvf bootstrap`: rlvf's own small policy, pretrained from scratch, offline.

No model hub is reachable on rlvf's machines or in CI, so rlvf trains its own base
policy: a byte-level BPE tokenizer and a tiny Llama-style causal LM, pretrained on the
procedural suite's *training* seed (prompts followed by a mix of canonical and plausible
wrong solutions, so the model is neither hopeless nor perfect and verification feedback
has something to fix; see `rlvf.models.corpus`). Never the eval seed. Prompt tokens weigh
little in the loss, and body tokens that name a parameter weigh more: the eval prompts
spell parameters their own way, so a model that does not copy names from the signature
fails most tasks with NameError.

Both are saved with `save_pretrained`, so every HF tool loads the result like a hub model.
The directory is `$RLVF_HOME/models/embedded-<config>-<hash>` (RLVF_HOME defaults to
~/.cache/rlvf), the hash covering the config, the seed and the corpus-format version; a
second call reuses it unless forced. Same seed, same machine: same weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

# Bump when the corpus, tokenizer or training loop changes in a way that changes weights.
FORMAT_VERSION = 1
EVAL_SEED = 999  # the procedural eval seed: never trained on
DEFAULT_SEED = 0
MARKER = "bootstrap.json"


@dataclass(frozen=True)
class BootstrapConfig:
    """Everything that decides the embedded model's weights (besides the seed)."""

    name: str
    # model
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    # corpus: procedural training tasks, several solutions per task
    train_seed: int = 42
    per_cell: int = 20
    docs_per_task: int = 2
    wrong_fraction: float = 0.4  # share of documents whose solution is a wrong one
    rename_fraction: float = 0.5  # share re-rendered with fresh parameter names (teaches copying)
    max_doc_tokens: int = 512
    # training
    epochs: int = 3
    batch_tokens: int = 2048  # padded tokens per batch (length bucketing); small = more steps
    learning_rate: float = 6e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    prompt_loss_weight: float = 0.1  # prompts are context; their tokens weigh less in the loss
    name_loss_weight: float = 3.0  # body tokens that copy a parameter name weigh more
    bf16: bool = False  # bf16 autocast: opt-in (emulated ~15x slower on CPUs without native bf16)

    def __post_init__(self) -> None:
        if self.train_seed == EVAL_SEED:
            raise UserError(f"bootstrap: train_seed {EVAL_SEED} is the eval seed")
        for field in ("wrong_fraction", "rename_fraction"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise UserError(f"bootstrap: {field} must be in [0, 1]")

    def key(self, seed: int) -> str:
        """Names the saved model: the config, the seed and the code that turns them into weights."""
        from rlvf.config import short_hash

        return short_hash(
            {
                "config": dataclasses.asdict(self),
                "seed": seed,
                "format": FORMAT_VERSION,
                "code": code_digest(),
            }
        )


@functools.cache
def code_digest() -> str:
    """Hash of the sources the weights depend on: the procedural generator, tokenizer and trainer.

    A change to any of them gives the embedded model a new directory instead of silently
    reusing weights trained on a different corpus.
    """
    import rlvf.tasks.procedural as procedural

    files = sorted(Path(procedural.__file__).parent.glob("*.py"))
    files += [Path(__file__).with_name(n) for n in ("bootstrap.py", "corpus.py", "tokenizer.py")]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


CONFIGS: dict[str, BootstrapConfig] = {
    "default": BootstrapConfig(name="default"),
    # For the test suite: the default architecture on ~half the tokens (~35-55 s on one
    # thread); writes Python that mostly parses at low temperature, rarely passes.
    "small": BootstrapConfig(name="small", per_cell=8, epochs=4),
}


def get_config(name: str) -> BootstrapConfig:
    if name not in CONFIGS:
        raise UserError(f"bootstrap: unknown config '{name}' (choose from {', '.join(CONFIGS)})")
    return CONFIGS[name]


def rlvf_home() -> Path:
    return Path(os.path.expanduser(os.environ.get("RLVF_HOME") or "~/.cache/rlvf"))


def default_dir(config: BootstrapConfig, seed: int = DEFAULT_SEED) -> Path:
    return rlvf_home() / "models" / f"embedded-{config.name}-{config.key(seed)}"


def parse_embedded(name: str) -> str:
    """'embedded' -> 'default', 'embedded:small' -> 'small'."""
    if name == "embedded":
        return "default"
    if not name.startswith("embedded:"):
        raise UserError(f"policy: '{name}' is not an embedded policy name")
    cfg = name.split(":", 1)[1] or "default"
    get_config(cfg)
    return cfg


def ensure_embedded(name: str = "embedded") -> Path:
    """The directory of the embedded policy `name`, bootstrapping it on first use."""
    return bootstrap(parse_embedded(name), seed=DEFAULT_SEED, progress=False)


def is_complete(path: Path) -> bool:
    return (path / MARKER).exists() and (path / "config.json").exists()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock next to `path`, so concurrent first uses bootstrap once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- corpus


def _param_names(prompt: str) -> frozenset[str]:
    """The parameter names of the last function the prompt opens (the one to complete)."""
    import ast

    try:
        tree = ast.parse(prompt + "    pass\n")
    except SyntaxError:
        return frozenset()
    defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    if not defs:
        return frozenset()
    a = defs[-1].args
    return frozenset(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs))


def _tokenize_docs(
    tok, docs: list[tuple[str, str]], max_tokens: int, name_weight: float = 1.0
) -> list[tuple[list[int], int, list[int]]]:
    """(token ids ending in EOS, number of prompt tokens, body positions naming a parameter).

    The positions let the loss weigh copying a parameter name from the signature into the
    body more than the template tokens around it.
    """
    prompts = tok([p for p, _ in docs], add_special_tokens=False)["input_ids"]
    enc = tok([p + s for p, s in docs], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for (prompt, body), p_ids, ids, offsets in zip(
        docs, prompts, enc["input_ids"], enc["offset_mapping"], strict=True
    ):
        ids = [*ids, tok.eos_token_id]
        if len(ids) > max_tokens:
            continue
        names = _param_names(prompt) if name_weight != 1.0 else frozenset()
        spans = [
            (len(prompt) + m.start(), len(prompt) + m.end())
            for name in names
            for m in re.finditer(rf"(?<![\w.]){re.escape(name)}(?!\w)", body)
        ]
        marks = [k for k, (a, b) in enumerate(offsets) if any(s <= a < e for s, e in spans)]
        out.append((ids, len(p_ids), marks))
    return out


def _batches(lengths: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches of document indices, in a seeded random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------- training


def _model_config(config: BootstrapConfig, tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    import torch

    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def _train(config: BootstrapConfig, seed: int, tok, data, progress: bool) -> tuple[Any, dict[str, Any]]:
    import torch
    from tqdm import tqdm
    from transformers import LlamaForCausalLM

    rng = random.Random(seed + 1)
    model = LlamaForCausalLM(_model_config(config, tok))
    model.train()
    lengths = [len(ids) for ids, _, _ in data]
    epochs = [_batches(lengths, config.batch_tokens, rng) for _ in range(config.epochs)]
    total = sum(len(e) for e in epochs)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        frac = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
    pad = tok.pad_token_id
    losses: list[float] = []
    n_tokens = 0
    bar = tqdm(total=total, desc="bootstrap", unit="step", disable=not progress)
    step = 0
    for batches in epochs:
        for batch in batches:
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            weights = torch.zeros((len(batch), width), dtype=torch.float32)
            for r, i in enumerate(batch):
                doc, n_prompt, marks = data[i]
                ids[r, : len(doc)] = torch.tensor(doc)
                mask[r, : len(doc)] = 1
                weights[r, : len(doc)] = 1.0
                weights[r, :n_prompt] = config.prompt_loss_weight
                weights[r, marks] = config.name_loss_weight
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits
            logp = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none"
            )
            w = weights[:, 1:].reshape(-1)
            loss = (logp * w).sum() / w.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(round(loss.item(), 4))
            n_tokens += int(mask.sum())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return model, {
        "steps": step,
        "tokens": n_tokens,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses[:: max(1, len(losses) // 50)],
    }


def _save_tokenizer(tok, out: Path) -> None:
    tok.save_pretrained(out)
    # Name the plain fast-tokenizer class so transformers 4.x and 5.x (and vLLM) all load it.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def bootstrap(
    config: BootstrapConfig | str = "default",
    seed: int = DEFAULT_SEED,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Tokenizer + model for `config`, trained unless already at `out`; returns the directory."""
    import torch
    from transformers import GenerationConfig

    from rlvf.models.corpus import build_corpus
    from rlvf.models.tokenizer import train_tokenizer
    from rlvf.train.common import cpu_threads

    cfg = get_config(config) if isinstance(config, str) else config
    path = Path(out).expanduser() if out else default_dir(cfg, seed)
    with _lock(path):
        if is_complete(path) and not force:
            return path
        if out and path.exists() and any(path.iterdir()) and not is_complete(path):
            raise UserError(f"bootstrap: {path} exists and is not an rlvf bootstrap directory")
        t0 = time.perf_counter()
        docs, stats = build_corpus(cfg, seed)
        if not docs:
            raise UserError("bootstrap: the procedural training suite produced no documents")
        texts = sorted({p for p, _ in docs}) + sorted({s for _, s in docs})
        tok = train_tokenizer(texts, cfg.vocab_size)
        data = _tokenize_docs(tok, docs, cfg.max_doc_tokens, cfg.name_loss_weight)
        stats["documents_kept"] = len(data)
        t_corpus = time.perf_counter() - t0
        with _deterministic(seed), cpu_threads("cpu"):
            model, train_stats = _train(cfg, seed, tok, data, progress)
            threads = torch.get_num_threads()
        t_train = time.perf_counter() - t0 - t_corpus
        model.generation_config = GenerationConfig(
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
        )
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp)
        _save_tokenizer(tok, tmp)
        info = {
            "config": dataclasses.asdict(cfg),
            "seed": seed,
            "key": cfg.key(seed),
            "format": FORMAT_VERSION,
            "parameters": sum(p.numel() for p in model.parameters()),
            "corpus": stats,
            "train": train_stats,
            "seconds": {"corpus": round(t_corpus, 2), "train": round(t_train, 2)},
            "threads": threads,
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return path


def read_info(path: str | Path) -> dict[str, Any]:
    p = Path(path) / MARKER
    return json.loads(p.read_text()) if p.exists() else {}
