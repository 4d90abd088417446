"""Sequential MNIST / digits experiment: data, model, training and evaluation."""
