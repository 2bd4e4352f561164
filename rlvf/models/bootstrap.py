"""`rlvf bootstrap`: rlvf's own small policy, pretrained from scratch, offline.

No model hub is reachable on rlvf's machines or in CI, so rlvf trains its own base
policy: a byte-level BPE tokenizer and a tiny Llama-style causal LM, pretrained on the
procedural suite's *training* seed (prompts followed by a mix of canonical and plausible
wrong solutions, so the model is neither hopeless nor perfect and verification feedback
has something to fix; see `rlvf.models.corpus`). Never the eval seed. Prompt tokens weigh
little in the loss, and body tokens that name a parameter weigh more: the eval prompts
spell parameters their own way, so a model that does not copy names from the signature
fails most tasks with NameError.

Identity. The model is named by what decides its weights: the config, the seed, a digest of
the tokenised corpus and the tokenizer, the training-loop version and the numeric mode
(`rlvf.models.pretrain.numerics`), never by the bytes of the source files: a comment edited
in the task generator re-derives the corpus digest (seconds, cached per source version) and
finds the same model. Training runs in a child process with CPU numerics pinned to AVX2 and
float32, so every x86-64 CPU builds the same weights (`weights_sha256` in bootstrap.json).

Both are saved with `save_pretrained`, so every HF tool loads the result like a hub model,
under `$RLVF_HOME/models/embedded-<config>-<key>` (RLVF_HOME defaults to ~/.cache/rlvf);
a second call reuses it unless forced; `rlvf bootstrap --prune` removes builds no current
config produces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvf.errors import UserError

# Bump when the training loop changes in a way that changes weights for the same corpus
# (the corpus and tokenizer are covered by their digest).
FORMAT_VERSION = 2
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
        """Names the saved model by what decides its weights (see the module docstring)."""
        from rlvf.config import short_hash
        from rlvf.models.pretrain import numerics

        return short_hash(
            {
                "config": dataclasses.asdict(self),
                "seed": seed,
                "format": FORMAT_VERSION,
                "corpus": corpus_digest(self, seed),
                "numerics": numerics(self.bf16),
            }
        )


@functools.cache
def source_digest() -> str:
    """Hash of the sources that generate the corpus and tokenizer.

    Not part of the model's identity: it only says when the cached corpus digest must be
    derived again (a changed comment costs seconds, a changed corpus a new model).
    """
    import tokenizers

    import rlvf.tasks.procedural as procedural

    files = sorted(Path(procedural.__file__).parent.glob("*.py"))
    files += [Path(__file__).with_name(n) for n in ("bootstrap.py", "corpus.py", "tokenizer.py")]
    h = hashlib.sha256(tokenizers.__version__.encode())
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


# --------------------------------------------------------------------------- tokenised corpus


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


# --------------------------------------------------------------------------- identity


@dataclass
class Prepared:
    """A config's tokenizer and tokenised corpus, and the digest that names them."""

    tokenizer: Any
    data: list[tuple[list[int], int, list[int]]]
    stats: dict[str, Any]
    digest: str
    seconds: float


@functools.lru_cache(maxsize=2)
def prepare(config: BootstrapConfig, seed: int) -> Prepared:
    """Build the corpus, train the tokenizer and tokenise (deterministic for config + seed)."""
    from rlvf.models.corpus import build_corpus
    from rlvf.models.tokenizer import train_tokenizer

    t0 = time.perf_counter()
    docs, stats = build_corpus(config, seed)
    if not docs:
        raise UserError("bootstrap: the procedural training suite produced no documents")
    texts = sorted({p for p, _ in docs}) + sorted({s for _, s in docs})
    tok = train_tokenizer(texts, config.vocab_size)
    data = _tokenize_docs(tok, docs, config.max_doc_tokens, config.name_loss_weight)
    stats["documents_kept"] = len(data)
    h = hashlib.sha256(tok.backend_tokenizer.to_str().encode())
    h.update(json.dumps(data, separators=(",", ":")).encode())
    return Prepared(tok, data, stats, h.hexdigest()[:16], time.perf_counter() - t0)


def _digest_file(config: BootstrapConfig, seed: int) -> Path:
    from rlvf.config import short_hash

    name = short_hash({"config": dataclasses.asdict(config), "seed": seed, "source": source_digest()})
    return rlvf_home() / "models" / ".corpus-digests" / f"{name}.json"


def corpus_digest(config: BootstrapConfig, seed: int) -> str:
    """The corpus + tokenizer digest, from the cache when these sources already derived it."""
    f = _digest_file(config, seed)
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(f.read_text())["corpus"]
    if prepare.cache_info().currsize == 0:
        from rlvf.console import say

        say(
            f"building the embedded model's corpus and tokenizer ('{config.name}'; its digest names the model)"
        )
    digest = prepare(config, seed).digest
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"corpus": digest, "config": config.name, "seed": seed}) + "\n")
    tmp.replace(f)
    return digest


# --------------------------------------------------------------------------- building


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
    from transformers import GenerationConfig

    from rlvf.models import pretrain

    cfg = get_config(config) if isinstance(config, str) else config
    path = Path(out).expanduser() if out else default_dir(cfg, seed)
    with _lock(path):
        if is_complete(path) and not force:
            return path
        if out and path.exists() and any(path.iterdir()) and not is_complete(path):
            raise UserError(f"bootstrap: {path} exists and is not an rlvf bootstrap directory")
        prep = prepare(cfg, seed)
        mode = pretrain.numerics(cfg.bf16)
        threads = pretrain.default_threads()
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tok = prep.tokenizer
        job = {
            "config": dataclasses.asdict(cfg),
            "seed": seed,
            "threads": threads,
            "world": pretrain.WORLD,
            "numerics": mode,
            "vocab": len(tok),
            "eos": tok.eos_token_id,
            "pad": tok.pad_token_id,
            "progress": progress,
        }
        (tmp / "job.json").write_text(json.dumps(job))
        (tmp / "data.json").write_text(json.dumps(prep.data, separators=(",", ":")))
        t0 = time.perf_counter()
        try:
            pretrain.run(tmp, mode, threads)
        except RuntimeError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(str(e)) from None
        t_train = time.perf_counter() - t0
        train_stats = json.loads((tmp / "train.json").read_text())
        model_dir = tmp / "model"
        gen = GenerationConfig(
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
        )
        gen.save_pretrained(model_dir)
        _save_tokenizer(tok, model_dir)
        info = {
            "config": dataclasses.asdict(cfg),
            "seed": seed,
            "key": cfg.key(seed),
            "format": FORMAT_VERSION,
            "corpus_digest": prep.digest,
            "numerics": mode,
            "weights_sha256": train_stats.pop("weights_sha256"),
            "parameters": train_stats.pop("parameters"),
            "corpus": prep.stats,
            "train": train_stats,
            "seconds": {"corpus": round(prep.seconds, 2), "train": round(t_train, 2)},
            "threads": train_stats.get("threads"),
            "ranks": train_stats.get("ranks"),
        }
        (model_dir / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        model_dir.rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_info(path: str | Path) -> dict[str, Any]:
    p = Path(path) / MARKER
    return json.loads(p.read_text()) if p.exists() else {}


def prune(dry_run: bool = False) -> list[Path]:
    """Remove builds under $RLVF_HOME/models that no current config produces; returns them.

    Only rlvf's own: `embedded-*` directories holding a bootstrap.json (or left half-built as
    `.partial`), and their lock files. Anything else in that folder is never touched. A build
    some process is writing right now (its lock is held) is kept.
    """
    import fcntl

    root = rlvf_home() / "models"
    stale: list[Path] = []
    for d in sorted(root.glob("embedded-*")):
        if not d.is_dir() or d.is_symlink():
            continue
        if d.name.endswith(".partial"):
            stale.append(d)
            continue
        info = read_info(d)
        if not info:
            continue  # not ours
        name, seed = info.get("config", {}).get("name"), info.get("seed")
        current = name in CONFIGS and isinstance(seed, int) and default_dir(CONFIGS[name], seed) == d
        if not current:
            stale.append(d)
    removed = []
    for d in stale:
        base = d.with_name(d.name.removesuffix(".partial"))
        lock = base.with_name(base.name + ".lock")
        with open(lock, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being built or used for a build right now
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            fcntl.flock(fh, fcntl.LOCK_UN)
        if not dry_run and not base.exists() and not base.with_name(base.name + ".partial").exists():
            lock.unlink(missing_ok=True)
    return removed
