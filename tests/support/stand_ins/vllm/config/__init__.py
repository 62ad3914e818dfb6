class StructuredOutputsConfig:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)
