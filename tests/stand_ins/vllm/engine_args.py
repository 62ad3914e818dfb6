class AsyncEngineArgs:
    def __init__(self, model: str, **kwargs) -> None:
        self.model = model
        self.kwargs = kwargs
