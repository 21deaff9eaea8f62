"""Image-classification inference service: FastAPI app serving the SavedModels under `models/`."""
