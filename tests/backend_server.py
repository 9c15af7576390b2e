"""The backend as a real gunicorn process for the end-to-end tests (the launcher is the demo's: scripts/services.py)."""

from scripts.services import BackendServer

__all__ = ["BackendServer", "LABEL_CONFIG"]

#: The labeling config of the end-to-end and fault-test projects: one image, one choice.
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="tissue" toName="image"><Choice value="stained"/><Choice value="background"/></Choices>
</View>"""
