"""What the numbered notebooks share: the profiles (smoke / cpu / gpu), defaults for a notebook opened on its own,
the main job (`run-all`) and keeping committed notebooks clean.
"""
