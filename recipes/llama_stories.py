"""Today's small-LM recipe on the stories: a Llama-style model trained with Muon and a story tokenizer.

    gpt-launch tokenizer train --data stories/ --vocab-size 4096 --output tokenizers/story-4k
    accelerate launch recipes/llama_stories.py --data stories/ --tokenizer tokenizers/story-4k
    gpt-launch export runs/llama-stories models/llama-stories     # a stock LlamaForCausalLM

The `llama-small` preset (the `small` budget: 4 layers, d_model 128, context 128) with RoPE,
RMSNorm, SwiGLU, two key/value heads for four query heads, no biases and no dropout; Muon (lr 0.02)
for the matrices inside the blocks and AdamW (lr 2e-3) for the embedding, head and norms, 50
warmup steps then cosine; 16 rows of 128 tokens per update. benchmarks/modern_block.py races it
against the paper's block at equal wall clock (docs/modern-recipe.md). Every value
below is a TrainConfig field and can be changed on the command line (see --help); for a bigger
model pass --model-config with the fields of `llama-small` changed.
"""

from launch.cli import train_command
from launch.settings.config import DataConfig, TrainConfig

RECIPE = TrainConfig(
    data=DataConfig(max_samples=None),  # every story of --data
    preset="llama-small",
    optimizer="muon",
    lr=2e-3,
    muon_lr=0.02,
    warmup_steps=50,
    batch_size=8,
    grad_accum=2,
    eval_every=200,
    output_dir="runs/llama-stories",
)

if __name__ == "__main__":
    train_command(RECIPE, name="llama_stories", help_text=__doc__, needs=("data.tokenizer",))()
