"""`python -m tuneforge.cli ...`: what `accelerate launch` runs in every process."""

from .main import app

if __name__ == "__main__":
    app()
