"""`gpt-launch export RUN OUT`: a finished run's best weights as a model folder that stock
transformers and gpt_core both load (`AutoModelForCausalLM`, `AutoTokenizer`, `pipeline`;
`gpt_core.load_pretrained`), with no custom code:

    OUT/config.json, model.safetensors   GPT-2 (pre-LN) or OpenAI GPT (post-LN), the tied matrix once
    OUT/generation_config.json           <|endoftext|> ends a story; our sampling defaults
    OUT/tokenizer.json                   the run's tokenizer (the `tokenizers` library's file), and
    OUT/vocab.json, merges.txt,          the same vocabulary as GPT-2-style BPE files
    OUT/tokenizer_config.json
    OUT/README.md                        a Hugging Face model card: YAML metadata, then what a reader needs
    OUT/curves.png                       the training curves the card shows

The folder is written beside OUT and renamed into place, so an interrupted export leaves no half
folder. `--push REPO` uploads it with huggingface_hub.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gpt_core import Tokenizer, load_pretrained, save_hf
from gpt_core.files import write_json
from gpt_core.hf import architecture
from gpt_core.tokenizer import EOT, GPT2_VOCAB_SIZE, byte_level_bpe, gpt2_files
from launch.checkpoints.folders import find_best
from launch.checkpoints.weights import weights_tokenizer
from launch.errors import UserError, check_writable
from launch.settings.commands import GenerateSettings
from launch.tracking.summary import RunSummary

from .report import markdown_table

HUB_DATASET = "roneneldan/TinyStories"
DATA_LICENCE = "CDLA-Sharing-1.0"


def export_model(run_dir: Path, out: Path, license: str = "mit", log=print) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    check_writable(out, "OUT")
    summary = RunSummary.load(run_dir)
    best = find_best(run_dir)
    if best is None:
        raise UserError(f"{run_dir} has no checkpoints/best; export a finished run (its --output-dir)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; choose a new folder or remove it")
    model = load_pretrained(best)
    tokenizer = weights_tokenizer(best, model.config.vocab_size)
    eot = tokenizer.eot_id
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        notes = save_hf(model, partial, {"bos_token_id": eot, "eos_token_id": eot})
    except ValueError as e:  # a shape no stock transformers class computes
        raise UserError(f"{best} cannot be exported: {e}") from None
    for note in notes:
        log(f"export: note: {note}")
    write_tokenizer(partial, model.config.context_length, tokenizer)
    generation = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "do_sample": True,
        "temperature": GenerateSettings.temperature,  # gpt-launch generate's defaults
        "top_k": GenerateSettings.top_k,
        "top_p": GenerateSettings.top_p,
        "max_new_tokens": GenerateSettings.max_tokens,
    }
    (partial / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if (run_dir / "curves.png").exists():
        shutil.copyfile(run_dir / "curves.png", partial / "curves.png")
    (partial / "README.md").write_text(
        model_card(summary, out.name, license, tokenizer, with_curves=(partial / "curves.png").exists())
    )
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(partial, out)
    return out


def write_tokenizer(folder: Path, context: int, tokenizer: Tokenizer) -> None:
    """The run's BPE as transformers loads it: tokenizer.json (byte-level, <|endoftext|> special),
    plus vocab.json and merges.txt. GPT-2's is built with the `tokenizers` library from GPT-2's own
    files; a trained one is its own tokenizer.json."""
    if tokenizer.save(folder) is not None:  # a trained tokenizer
        tokenizer.encoding.model.save(str(folder))  # its vocab.json and merges.txt
    else:
        from tokenizers import AddedToken, models

        encoder_json, vocab_bpe = gpt2_files()
        gpt2 = byte_level_bpe(models.BPE.from_file(str(encoder_json), str(vocab_bpe)))
        gpt2.add_special_tokens([AddedToken(EOT, special=True)])
        gpt2.save(str(folder / "tokenizer.json"))
        shutil.copyfile(encoder_json, folder / "vocab.json")
        shutil.copyfile(vocab_bpe, folder / "merges.txt")
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "model_max_length": context,
        "add_prefix_space": False,
    }
    write_json(folder / "tokenizer_config.json", config)


def _card_metadata(summary: RunSummary, name: str, license: str) -> dict:
    test, source = summary.test or {}, summary.config["data"]["source"]
    from_tinystories = "tinystories" in source.lower() or "smoke_stories" in source
    metrics = [
        {"type": "perplexity", "value": round(test["perplexity"], 4), "name": "test perplexity"},
        {"type": "accuracy", "value": round(test["accuracy"], 4), "name": "test next-token accuracy"},
        {"type": "loss", "value": round(test["loss"], 4), "name": "test cross-entropy (nats/token)"},
    ]
    if "bits_per_byte" in test:  # summaries written before bits per byte existed have none
        bpb = {"type": "bits_per_byte", "value": round(test["bits_per_byte"], 4), "name": "test bits per byte"}
        metrics.append(bpb)
    dataset = {
        "type": HUB_DATASET if from_tinystories else source,
        "name": "TinyStories" if from_tinystories else source,
        "split": f"test ({summary.config['data']['split_mode']} split of {source})",
    }
    metadata = {
        "language": ["en"],
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": [architecture(summary.model_config())[0], "causal-lm", "tinystories", "gpt-launch"],
        "metrics": ["perplexity", "accuracy", "bits_per_byte"],
        "model-index": [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "text-generation", "name": "Causal language modeling"},
                        "dataset": dataset,
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }
    if from_tinystories:
        metadata["datasets"] = [HUB_DATASET]
    return metadata


def model_card(summary: RunSummary, name: str, license: str, tokenizer: Tokenizer, with_curves: bool = False) -> str:
    """The README.md of an exported folder: YAML metadata (license, datasets, metrics), then prose."""
    import yaml

    m, cfg = summary.model, summary.config
    model = summary.model_config()
    source = cfg["data"]["source"]
    samples = [f"> **{s['prompt']}**{s['text']}".replace("\n", "\n> ") for s in summary.samples]
    lines = [
        "---",
        yaml.safe_dump(_card_metadata(summary, name, license), sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"A {m['parameters'] / 1e6:.1f}M-parameter {'Llama' if model.positions == 'rope' else 'GPT-2'}-style language "
        "model trained from scratch on short stories "
        f"with gpt-launch (the `gpt_core` model in plain PyTorch, trained by a Hugging Face Accelerate loop).",
        "",
        "## Architecture",
        "",
        f"{model.describe()}; {_vocabulary(tokenizer)} (preset `{m.get('preset') or 'custom'}`).",
        "",
        "## Data",
        "",
        f"Source: `{source}`, {cfg['data']['split_mode']} split "
        f"({cfg['data']['train_fraction']:.0%} train / {cfg['data']['validation_fraction']:.0%} validation "
        "/ rest test).",
        "",
        *[
            f"- {split}: {v['stories']:,} stories, {v['tokens']:,} tokens"
            for split, v in summary.data.get("splits", {}).items()
        ],
        "",
        f"TinyStories (Eldan & Li, 2023, [{HUB_DATASET}](https://huggingface.co/datasets/{HUB_DATASET})) is released "
        f"under the {DATA_LICENCE} licence; text derived from it must keep that licence.",
        "",
    ]
    return "\n".join(lines + _card_results(summary, samples, with_curves, tokenizer))


def _optimizer(cfg: dict) -> str:
    adamw = f"AdamW (lr {cfg['lr']}, betas {tuple(cfg['betas'])}, weight decay {cfg['weight_decay']})"
    if cfg.get("optimizer") == "muon":
        return f"Muon (lr {cfg['muon_lr']}) for the matrices inside the blocks and {adamw} for the rest"
    return adamw


def _vocabulary(tokenizer: Tokenizer) -> str:
    if tokenizer.path is None:
        return f"GPT-2's byte-level BPE vocabulary ({GPT2_VOCAB_SIZE:,} tokens)"
    return f"a byte-level BPE vocabulary of {tokenizer.vocab_size:,} tokens trained on the train split of the stories"


def _card_results(summary: RunSummary, samples: list[str], with_curves: bool, tokenizer: Tokenizer) -> list[str]:
    cfg = summary.config
    return [
        "## Training recipe",
        "",
        f"{_optimizer(cfg)}, "
        f"{cfg['warmup_steps']} warmup steps then cosine decay to 0, gradient clipping at {cfg['grad_clip']}, "
        f"batch {cfg['batch_size']} x {cfg['grad_accum']} accumulation per process, up to "
        f"{cfg['epochs']} epochs with early stopping (patience {cfg['patience']}), seed {cfg['seed']}.",
        "",
        "## Results",
        "",
        "Test metrics are measured with the best validation weights, over real target tokens only (padding is never "
        "counted); perplexity is exp of the mean token loss, and bits per byte is the total loss in bits over the "
        "UTF-8 bytes of the text those tokens stand for: the figure to compare with models on other tokenizers.",
        "",
        *markdown_table(summary.rows()),
        "",
        *(["![training curves](curves.png)", ""] if with_curves else []),
        "## Sample stories",
        "",
        *("\n\n".join(samples) or "(none)").splitlines(),
        "",
        "## How to load it",
        "",
        f"With transformers (a stock `{architecture(summary.model_config())[1]}`, no custom code):",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'story = pipeline("text-generation", model="path/to/this/folder")  # or "user/repo" on the Hub',
        'print(story("Once upon a time", max_new_tokens=200)[0]["generated_text"])',
        "```",
        "",
        "With gpt_core (plain PyTorch, the code it was trained with):",
        "",
        "```python",
        "from gpt_core import generate, load_pretrained, tokenizer_of",
        "",
        'model = load_pretrained("path/to/this/folder")  # or huggingface_hub.snapshot_download("user/repo")',
        'tokenizer = tokenizer_of("path/to/this/folder")',
        'ids = generate(model, tokenizer.encode("Once upon a time"), 200, eos_id=tokenizer.eot_id)',
        "print(tokenizer.decode(ids))",
        "```",
        "",
        "`config.json` and `model.safetensors` are in transformers' format (the tied output layer stored once, as the "
        "token embedding, which holds the embedding times sqrt(d_model) the model was trained with); the tokenizer is "
        f"{_vocabulary(tokenizer)}, with `<|endoftext|>` ({tokenizer.eot_id}) ending each story.",
        "",
    ]


def push_to_hub(folder: Path, repo: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub; every failure is one line naming the fix."""
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise UserError("--push needs huggingface_hub: pip install huggingface_hub") from None
    if constants.HF_HUB_OFFLINE:
        raise UserError(
            f"HF_HUB_OFFLINE is set, so nothing was uploaded; {folder} is complete: unset it and run "
            f"`hf upload {repo} {folder}`"
        )
    if not huggingface_hub.get_token():
        raise UserError(
            f"no Hugging Face token: run `hf auth login` (or set HF_TOKEN), then "
            f"`hf upload {repo} {folder}`; {folder} is complete"
        )
    api = huggingface_hub.HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo, repo_type="model", commit_message="gpt-launch export"
        )
    except Exception as e:  # network, auth and permission errors all end the same way: nothing lost
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"upload to {repo} failed ({first}); {folder} is complete: retry with `hf upload {repo} {folder}`"
        ) from None
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo}"
