"""diffsci.core"""
