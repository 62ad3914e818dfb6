class ChatParams:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
