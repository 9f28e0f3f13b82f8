"""The HTTP service (``service.app.create_app``) and its torch-free client.

Nothing is imported here, so ``import service.client`` never loads torch.
"""
