"""Stage 6, chat: the terminal chat, the notebook chat box, and the check that an exported model chats as trained.
"""
