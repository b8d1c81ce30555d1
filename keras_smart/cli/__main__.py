"""`python -m keras_smart.cli`: the `keras-smart` command."""

from keras_smart.cli import commands

if __name__ == "__main__":
    commands.run()
