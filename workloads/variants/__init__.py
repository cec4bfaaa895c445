"""Variant files that ship as examples: proposed changes to the model (see simulator/engine/variants.py).

``--variant NAME`` finds ``NAME.py`` here (dashes for underscores); any other
``--variant`` is a path to your own file.
"""
