"""Runnable examples: the seed's book-demo saga and a refund flow, with simulated agents."""
