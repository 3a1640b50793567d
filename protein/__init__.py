"""diffsci.protein"""
