"""What the results say: thresholds and clusters with atlas labels, replication across
leave-one-out runs and sweep variants, Egger tests at cluster peaks and the multimodal cluster
tables. Computed results in, tables and label volumes out; no file is written here."""
