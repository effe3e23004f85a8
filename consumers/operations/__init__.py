"""The operations on the stores, shared by the command line and the web app: read (the read models as their
users ask them, and the JSON of an answer), replay a conversation from the log, verify the stores against the
log, rebuild a store from it, and forget a subject everywhere."""
