"""flexwm: one flexibly conditioned robot world model.

The same weights act as a world action model (image + instruction -> video + actions), an action-conditioned
simulator (image + actions -> video), an inverse-dynamics model and a success/value estimator.
"""

__version__ = "0.1.0"
