-- A user's totals are the sums of the user's pairs, read from user_movies on
-- a lookup (the user's pairs sit side by side under its key). Kept in a row
-- of their own, every event wrote two pages far apart in the file, one here
-- and one in user_movies; over a million users that doubled what a batch
-- wrote. Movie totals keep their rows: a movie has too many viewers to sum.
DROP TABLE user_totals;
