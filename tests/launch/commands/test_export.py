"""`gpt-launch export`: a model folder that gpt_core loads, with a model card holding the run's real metrics."""

import json

import pytest
import torch
import yaml

from gpt_core import load_pretrained
from tests.helpers import PYTHON, invoke, run_cli

pytestmark = pytest.mark.slow


def export(run_dir, out, *extra, env=None, check=True):
    """In a process of its own when `env` matters: huggingface_hub reads it when first imported."""
    if env is None:
        return invoke("export", run_dir, out, *extra, check=check)
    return run_cli([PYTHON, "-m", "launch.cli", "export", run_dir, out, *extra], env=env, check=check)


@pytest.fixture(scope="module")
def exported(wandb_offline_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-stories-model"
    export(wandb_offline_run, out, check=True)
    return out


def test_exported_folder_loads_and_its_card_holds_the_real_metrics(wandb_offline_run, exported):
    out = exported
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "README.md",
        "curves.png",
    }
    # gpt_core reads the folder (transformers' names and parameterisation) and computes the same model
    exported_model, best = load_pretrained(out).eval(), load_pretrained(wandb_offline_run / "checkpoints" / "best")
    idx = torch.randint(0, best.config.vocab_size, (2, best.config.context_length))
    with torch.no_grad():
        assert (exported_model(idx)[0] - best.eval()(idx)[0]).abs().max() <= 1e-5
    # no larger than the checkpoint's weights plus the position table it now stores
    table = best.config.context_length * best.config.d_model * 4
    ckpt_size = (wandb_offline_run / "checkpoints" / "best" / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size <= ckpt_size + table + 4096
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    header, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(header)
    summary = json.loads((wandb_offline_run / "summary.json").read_text())
    assert meta["license"] == "mit" and meta["datasets"] == ["roneneldan/TinyStories"]
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["perplexity"] == pytest.approx(summary["test"]["perplexity"], abs=1e-4)
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-4)
    assert metrics["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-4)
    assert metrics["bits_per_byte"] == pytest.approx(summary["test"]["bits_per_byte"], abs=1e-4)
    assert 'pipeline("text-generation"' in body and "GPT2LMHeadModel" in body
    assert "CDLA-Sharing-1.0" in body and "load_pretrained" in body and f"{summary['model']['parameters']:,}" in body
    assert summary["samples"][0]["prompt"] in body and summary["hardware"]["device"] in body


def test_export_refuses_a_folder_in_use(wandb_offline_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = export(wandb_offline_run, tmp_path / "taken", check=False)
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_push_without_a_token_or_a_network_fails_in_one_line_and_keeps_the_folder(wandb_offline_run, tmp_path):
    no_token = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    result = export(wandb_offline_run, tmp_path / "a", "--push", "me/tiny", env=no_token, check=False)
    assert result.returncode == 2 and "no Hugging Face token" in result.stderr
    assert load_pretrained(tmp_path / "a").num_params() > 0
    unreachable = {**no_token, "HF_TOKEN": "hf_" + "x" * 34, "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = export(wandb_offline_run, tmp_path / "b", "--push", "me/tiny", env=unreachable, check=False)
    assert result.returncode == 2 and "upload to me/tiny failed" in result.stderr and "Traceback" not in result.stderr
    assert "hf_xxxx" not in result.stderr and (tmp_path / "b" / "README.md").exists()


def test_stock_transformers_loads_the_export_offline(exported, wandb_offline_run, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from gpt_core import generate, get_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    ours, gpt2 = load_pretrained(wandb_offline_run / "checkpoints" / "best").eval(), get_tokenizer()
    text = 'Once upon a time, Tom said "hi!" to 東京 🐉.\n\nThe end.<|endoftext|>'
    assert tokenizer(text)["input_ids"] == gpt2.encode(text, allow_special=True)
    ids = gpt2.encode(text, allow_special=True)
    assert tokenizer.eos_token_id == gpt2.eot_id and tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.removesuffix("<|endoftext|>")
    prompt = gpt2.encode("Once upon a time")
    with torch.no_grad():
        x = torch.tensor([prompt + gpt2.encode(" there was a little girl")])
        assert (model(x).logits - ours(x)[0]).abs().max() <= 1e-4
        model.generation_config.eos_token_id = None  # 20 tokens each, <|endoftext|> or not
        theirs = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20)
    greedy = generate(ours, prompt, 20, greedy=True, eos_id=None)
    assert theirs[0].tolist()[len(prompt) :] == greedy  # the same tokens, greedy, through transformers' own generate
    cli = invoke("generate", wandb_offline_run, "-p", "Once upon a time", "--max-tokens", "20", "--greedy", check=True)
    assert cli.stdout.rstrip("\n") == "Once upon a time" + gpt2.decode(
        [t for t in generate(ours, prompt, 20, greedy=True) if t != gpt2.eot_id]
    )
    story = transformers.pipeline("text-generation", model=str(exported))("Once upon a time", max_new_tokens=8)
    assert story[0]["generated_text"].startswith("Once upon a time") and len(story[0]["generated_text"]) > 16


def test_lm_evaluation_harness_scores_the_export_as_evaluate_does(exported, tmp_path):
    """recipes/lm_eval/tinystories.yaml on local stories, through the real `lm_eval` command, against
    `gpt-launch evaluate --layout documents` on the same stories: bits per byte agree."""
    pytest.importorskip("lm_eval")
    from launch.settings.config import SMOKE_DATA
    from tests.helpers import REPO

    stories = [json.loads(line)["text"].strip() for line in SMOKE_DATA.read_text().splitlines()]
    data = tmp_path / "stories.jsonl"
    data.write_text("".join(json.dumps({"text": s}) + "\n" for s in stories))
    task = (REPO / "recipes" / "lm_eval" / "tinystories.yaml").read_text()
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "tinystories.yaml").write_text(task.replace("stories/validation.jsonl.gz", str(data)))
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run_cli(
        [
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={exported},dtype=float32",
            "--device",
            "cpu",
            "--include_path",
            tmp_path / "task",
            "--tasks",
            "tinystories_local",
            "--batch_size",
            "8",
            "--output_path",
            tmp_path / "results",
        ],
        env=offline,
        timeout=300,
    )
    results = json.loads(next((tmp_path / "results").rglob("results_*.json")).read_text())["results"]
    harness = results["tinystories_local"]["bits_per_byte,none"]
    ours = tmp_path / "ours.json"
    invoke(
        "evaluate",
        exported,
        "--data",
        data,
        "--max-samples",
        "0",
        "--split",
        "all",
        "--layout",
        "documents",
        "--data-cache",
        tmp_path / "cache",
        "--json-out",
        ours,
        check=True,
    )
    measured = json.loads(ours.read_text())
    assert measured["tokens"] > len(stories) * 32  # stories past the context: scored in windows
    # Both sides run the same float32 forward passes; the harness sums each document's log-likelihood
    # in float64 and so do we, per row: they agree to ~1e-9 (3e-9 measured at scale, docs/using-a-model.md). The
    # slack left is for another CPU's BLAS summing the float32 products in another order.
    assert measured["bits_per_byte"] == pytest.approx(harness, rel=1e-6)


def test_an_export_with_a_trained_tokenizer_loads_in_transformers(story_run, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from gpt_core import tokenizer_of

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "story-export"
    assert invoke("export", story_run, out).exit_code == 0
    ours, words = (
        load_pretrained(story_run / "checkpoints" / "best").eval(),
        tokenizer_of(story_run / "checkpoints" / "best"),
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = 'Once upon a time, Tom said "hi!" to 東京 🐉.\n\nThe end.<|endoftext|>'
    ids = words.encode(text, allow_special=True)
    assert tokenizer(text)["input_ids"] == ids and max(ids) < 512 and tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == words.eot_id == transformers.AutoConfig.from_pretrained(out).eos_token_id
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.vocab_size == 512
    with torch.no_grad():
        x = torch.tensor([ids[: ours.config.context_length]])
        assert (model(x).logits - ours(x)[0]).abs().max() <= 1e-4
    assert tokenizer_of(out).fingerprint == words.fingerprint  # gpt_core finds the same tokenizer there
    assert "512 tokens trained on the train split" in (out / "README.md").read_text()


def test_a_llama_style_run_exports_as_stock_llama_with_its_tokenizer_and_card(llama_run, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from gpt_core import tokenizer_of

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "llama-export"
    assert invoke("export", llama_run, out).exit_code == 0
    ours = load_pretrained(llama_run / "checkpoints" / "best").eval()
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == 1
    words = tokenizer_of(out)
    ids = words.encode("Once upon a time, Tom found a red ball.")
    with torch.no_grad():
        x = torch.tensor([ids])
        assert (model(x).logits - ours(x)[0]).abs().max() <= 1e-4
    story = transformers.pipeline("text-generation", model=str(out))("Once upon a time", max_new_tokens=8)
    assert story[0]["generated_text"].startswith("Once upon a time")
    card = (out / "README.md").read_text()
    assert "Llama-style" in card and "rotary positions" in card and "LlamaForCausalLM" in card
    assert "Muon (lr 0.03) for the matrices inside the blocks" in card
    tags = yaml.safe_load(card[4:].split("\n---\n", 1)[0])["tags"]
    assert tags[0] == "llama" and "gpt2" not in tags  # the card says what the model is
