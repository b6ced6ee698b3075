"""The quality benchmark: real recordings from PyPI wheels, tgatunet against SAITS trained both ways."""
