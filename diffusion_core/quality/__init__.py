"""The quality yardstick: Frechet distance and KID on the features of a small Fashion-MNIST
classifier trained by the project (see classifier.py for why not Inception)."""
from .classifier import Classifier, load_classifier
from .metrics import frechet_distance, kernel_distance

__all__ = ["Classifier", "frechet_distance", "kernel_distance", "load_classifier"]
