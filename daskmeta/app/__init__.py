"""The application: typed configuration, the workflow that runs a configuration on a Dask
cluster and writes the store and the outputs, the Dask client, and the command line."""
