"""Stand-in for Colab's google.colab (see tests/colab_standin/README.md)."""
