"""Activation destinations: Customer.io, Meta Custom Audiences and Google Data Manager clients, with sandboxes."""
