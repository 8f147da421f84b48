-- Hostile and broken input (issue 11).
--
-- data_transfer.redeliveries: how many times a bundle that arrived damaged (found at
-- unpacking) was sent again from the origin buffer; bounded, then the unpack FAILS.
ALTER TABLE data_transfer ADD COLUMN redeliveries integer NOT NULL DEFAULT 0 CHECK (redeliveries >= 0);

-- raw_data_file.inode / mtime_ns: the identity of the file that was hashed at filing.
-- Deletion removes a source file only if it is still that file (same inode, size and
-- modification time, or else the same checksum, re-read). inode is numeric: some file
-- systems hand out 64-bit unsigned inode numbers.
ALTER TABLE raw_data_file
    ADD COLUMN inode numeric(20, 0) CHECK (inode >= 0),
    ADD COLUMN mtime_ns bigint;
