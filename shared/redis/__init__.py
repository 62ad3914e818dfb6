"""Redis as inferq uses it: the client, every key name, the Lua loader and its shared library,
consumer groups, outages, index pages."""
