"""Offline training job: fits the stateful LSTM with batch size N and saves a checked artifact."""
