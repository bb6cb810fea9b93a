"""World models: the flexible transformer, flow matching, and the interface planners depend on."""

from flexwm.models import video_vae  # noqa: E402, F401 - registers the diffusers tokenizer kinds
