"""diffsci.weather"""
