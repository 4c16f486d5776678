"""TinyStories, the paper's recipe.

    accelerate launch recipes/tinystories.py --smoke                 # one minute on a CPU, no network
    accelerate launch recipes/tinystories.py                         # the paper's run (hub data)
    accelerate launch recipes/tinystories.py --data stories/ --preset small

6 layers, 8 heads, d_model 512, FFN 2048, context 256, dropout 0.1, post-LN; the first 270,000
stories split 70/20/10; AdamW lr 2e-4, betas (0.9, 0.95), weight decay 0.01, 500 warmup steps then
cosine; batch 4 per GPU (2 per CPU process) x 8 accumulation; up to 10 epochs, early stopping after
3 evaluations without improvement. These are TrainConfig's defaults (launch/settings/config.py, their one
home); every one can be changed on the command line (see --help).
"""

from launch.cli import train_command
from launch.settings.config import TrainConfig

RECIPE = TrainConfig(output_dir="runs/tinystories")

if __name__ == "__main__":
    train_command(RECIPE, name="tinystories", help_text=__doc__)()
