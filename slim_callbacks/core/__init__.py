"""Foundation: the error family, argument checks, Paddle specifics and weight files.

Imports nothing else of slim_callbacks; every other subpackage may use it.
"""
