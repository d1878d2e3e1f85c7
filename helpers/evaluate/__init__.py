"""Stage 7, evaluate: before vs after -- persona identity, 复读机 rate, similarity and answer quality; Colorist ΔE00.
"""
