"""null"""
