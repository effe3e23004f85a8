"""Runnable examples: the book-demo saga and a refund flow, with simulated agents."""
