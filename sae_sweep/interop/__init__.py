"""Dictionaries in and out: SAELens folders written from ours, and SAEs of other libraries read for analysis.

saelens.py     SAELens' folder format both ways: a dictionary written as one, any such folder read as atoms
export.py      ``python -m sae_sweep.interop.export``: a whole store as SAELens folders
foreign.py     SAEs of SAELens, sparsify and dictionary_learning read for ``analyze.py source=foreign``
"""
