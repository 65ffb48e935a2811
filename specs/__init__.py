"""The shipped spec library, found by name (`archspec.build("delugenet146")`)."""
