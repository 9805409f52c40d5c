"""Task distributions: sine-wave regression (``sine``) and Omniglot classification (``omniglot``).

``mamlcourse.data.omniglot`` is imported on first use: it reads image archives.
"""

from . import sine

__all__ = ["sine"]
