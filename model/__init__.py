"""The thing being tuned: the PyTorch "Learn the Basics" FashionMNIST network, plain PyTorch."""
