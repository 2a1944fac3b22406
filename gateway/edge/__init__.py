"""The edge: what sits between the ASGI server and the gateway's handlers.

``server`` is the only module that imports the ASGI server (uvicorn); ``lifecycle`` knows the
serving phase and the in-flight requests; ``headers`` caps the request head.
"""
